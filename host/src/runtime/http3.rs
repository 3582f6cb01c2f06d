//! WASI 0.3 `wasi:http/service` components (`wasi:http/handler@0.3`, async), served next to
//! 0.2 ones on the same terms: a fresh instance per request, the service's limits and
//! grants, outbound requests through the same [`super::outbound::OutboundPolicy`].
//!
//! A 0.3 guest returns its response head from `handle` and usually keeps writing the body
//! from a task it spawned. Such tasks only run while the store's `run_concurrent` event
//! loop is driven, so the request's tokio task keeps driving it until the response body
//! has been read to its end (or the client went away), then reports the outcome.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use wasmtime::Store;
use wasmtime_wasi_http::Error as HttpError;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::http::{Completion, run_to_end, until_head};
use super::http_body::GuardedBody;
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

impl Runtime {
    /// Serve one HTTP request with a WASI 0.3 component; see [`Runtime::handle_http`].
    pub(super) async fn handle_http3<B>(
        self: &Arc<Self>,
        pre: ServicePre<StoreState>,
        code: &super::Code,
        call: CallContext,
        req: http::Request<B>,
        limits: ExecLimits,
        done: Completion,
    ) -> Result<http::Response<HyperOutgoingBody>, CallError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<HttpError>,
    {
        let tail = OutputTail::new(2048);
        let mut store: Store<StoreState> = self.new_store(code, call, limits, &tail)?;
        let (head_tx, head_rx) = oneshot::channel::<Head>();
        let (outcome_tx, outcome_rx) = oneshot::channel::<bool>();
        let idle = self.idle.clone();
        let task = Box::pin(async move {
            let traced = store.data().call.trace.run.clone();
            let run = async {
                let t = Instant::now();
                let service = match pre.instantiate_async(&mut store).await {
                    Err(e) if idle.made_room(&e) => pre.instantiate_async(&mut store).await?,
                    other => other?,
                };
                if let Some(r) = &traced {
                    r.instantiated(t.elapsed().as_micros() as u64);
                }
                let (request, request_io) =
                    wasmtime_wasi_http::p3::Request::from_http(&mut store.data_mut().outbound, req);
                store
                    .run_concurrent(async move |acc| -> wasmtime::Result<()> {
                        let resp = match service.handle(acc, request).await? {
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
                        if head_tx.send(Ok(resp)).is_ok() {
                            // The guest's tasks write the body: drive them until it is out.
                            let _ = end_rx.await;
                        }
                        Ok(())
                    })
                    .await?
            };
            run_to_end(run, limits, &tail, outcome_tx, done).await
        });
        let (resp, _) = until_head(head_rx, task, None).await?;
        let resp = resp?;
        Ok(resp.map(|body| GuardedBody::new(body, outcome_rx).boxed_unsync()))
    }
}
