//! Standard `wasi:http/proxy` components, served through wasmtime-wasi-http.
//!
//! A request's body streams into the guest and the guest's response body streams out: the
//! guest runs in a task that outlives the response head, holding its admission permit
//! until it finishes. Outbound `wasi:http/outgoing-handler` requests go only to the
//! `host:port`s the service was granted, over HTTP or HTTPS, to addresses that pass
//! [`super::outbound`]'s check.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpView};

use super::state::StoreState;
use super::{CallContext, Prepared, PreparedKind};
use super::{CallError, ExecLimits, OutputTail, Runtime, classify};

/// Marks a request that reached the node over TLS: the guest sees the `https` scheme.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// A response body that ends in an error, not a clean end, when the guest failed while
/// writing it. wasmtime-wasi-http ends the body cleanly when the guest's store goes away
/// without `finish`, which would make a truncated body look complete to the client.
pub(super) struct GuardedBody {
    inner: HyperOutgoingBody,
    outcome: Option<tokio::sync::oneshot::Receiver<bool>>,
}

impl GuardedBody {
    /// `inner`, ending in an error unless `outcome` says the guest finished well.
    pub(super) fn new(inner: HyperOutgoingBody, outcome: tokio::sync::oneshot::Receiver<bool>) -> Self {
        GuardedBody { inner, outcome: Some(outcome) }
    }
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, HttpError>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {}
            other => return other,
        }
        let Some(outcome) = self.outcome.as_mut() else { return Poll::Ready(None) };
        match std::pin::Pin::new(outcome).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(ok) => {
                self.outcome = None;
                if ok == Ok(true) {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(HttpError::InternalError(Some(
                        "the component failed while sending the body".into(),
                    )))))
                }
            }
        }
    }
}

/// What happened to a wasi:http request, reported when the guest's task ends.
pub type Completion = Box<dyn FnOnce(Result<(), CallError>) + Send>;

impl Runtime {
    /// Serve one HTTP request with a `wasi:http` component (WASI 0.2 or 0.3). The response head is returned as
    /// soon as the guest sets it; the body streams while the guest keeps running. `done` is
    /// called (and `hold` dropped) when the guest finishes.
    pub async fn handle_http<B>(
        self: &Arc<Self>,
        prepared: Arc<Prepared>,
        call: CallContext,
        req: http::Request<B>,
        limits: ExecLimits,
        done: Completion,
    ) -> Result<http::Response<HyperOutgoingBody>, CallError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<HttpError>,
    {
        let prepared = self.pick(&prepared, &call).clone();
        let code = prepared.code();
        code.note(&call);
        let pre = match &code.kind {
            PreparedKind::Http(pre) => pre,
            PreparedKind::Http3(pre) => {
                return self.handle_http3(pre.clone(), &code, call, req, limits, done).await;
            }
            PreparedKind::Nanoservice(_) => return Err(CallError::Internal("not a wasi:http component".into())),
        };
        let pre = pre.clone();
        let tail = OutputTail::new(2048);
        let mut store: Store<StoreState> = self.new_store(&code, call, limits, &tail)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let data = store.data_mut();
        let scheme = if req.extensions().get::<OverTls>().is_some() { Scheme::Https } else { Scheme::Http };
        let incoming = data.http().new_incoming_request(scheme, req).map_err(|e| CallError::Internal(e.to_string()))?;
        let out = data.http().new_response_outparam(tx).map_err(|e| CallError::Internal(e.to_string()))?;
        let task_tail = tail.clone();
        let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel::<bool>();
        let idle = self.idle.clone();
        let task = tokio::spawn(async move {
            let traced = store.data().call.trace.run.clone();
            let run = async {
                let t = std::time::Instant::now();
                let proxy = match pre.instantiate_async(&mut store).await {
                    Err(e) if idle.made_room(&e) => pre.instantiate_async(&mut store).await?,
                    other => other?,
                };
                if let Some(r) = &traced {
                    r.instantiated(t.elapsed().as_micros() as u64);
                }
                proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
            };
            run_to_end(run, limits, &task_tail, outcome_tx, done).await
        });
        match rx.await {
            Ok(Ok(resp)) => Ok(resp.map(|body| GuardedBody::new(body, outcome_rx).boxed_unsync())),
            Ok(Err(code)) => Err(CallError::Guest(format!("the component answered with an error: {code:?}"))),
            Err(_) => Err(no_head(task).await),
        }
    }
}

/// Run a wasi:http guest's whole request (`run`, bounded by the service's deadline) and say
/// how it ended: to `outcome`, which the response body waits on, and to `done`, which
/// holds the admission permit and stats, so they are released only when the guest is done.
pub(super) async fn run_to_end(
    run: impl Future<Output = wasmtime::Result<()>>,
    limits: ExecLimits,
    tail: &OutputTail,
    outcome: tokio::sync::oneshot::Sender<bool>,
    done: Completion,
) -> Result<(), CallError> {
    let result = match tokio::time::timeout(limits.timeout + super::EPOCH_TICK * 4, run).await {
        Ok(r) => r.map_err(|e| classify(e, limits, tail)),
        Err(_) => Err(CallError::Timeout(limits.timeout)),
    };
    let _ = outcome.send(result.is_ok());
    done(result.clone());
    result
}

/// Why a guest produced no response head: its task says.
pub(super) async fn no_head(task: tokio::task::JoinHandle<Result<(), CallError>>) -> CallError {
    match task.await {
        Ok(Ok(())) => CallError::Guest("the component returned without setting a response".into()),
        Ok(Err(e)) => e,
        Err(e) => CallError::Internal(format!("the request task failed: {e}")),
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
        let resp = self.handle_http(prepared.clone(), call, request, limits, Box::new(|_| ())).await?;
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
