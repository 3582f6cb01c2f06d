//! Response bodies of wasi:http guests: one that ends in an error when its guest failed
//! ([`GuardedBody`]), one taken whole when its guest had already finished
//! ([`finished`]), and one that runs the rest of its guest's request from its own polls
//! ([`InPlace`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tokio::sync::oneshot;
use wasmtime_wasi_http::Error as HttpError;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A response body that ends in an error, not a clean end, when the guest failed while
/// writing it. wasmtime-wasi-http ends the body cleanly when the guest's store goes away
/// without `finish`, which would make a truncated body look complete to the client.
pub(super) struct GuardedBody {
    inner: HyperOutgoingBody,
    outcome: Option<oneshot::Receiver<bool>>,
}

impl GuardedBody {
    /// `inner`, ending in an error unless `outcome` says the guest finished well.
    pub(super) fn new(inner: HyperOutgoingBody, outcome: oneshot::Receiver<bool>) -> Self {
        GuardedBody { inner, outcome: Some(outcome) }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {}
            other => return other,
        }
        let Some(outcome) = self.outcome.as_mut() else { return Poll::Ready(None) };
        match Pin::new(outcome).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(ok) => {
                self.outcome = None;
                if ok == Ok(true) { Poll::Ready(None) } else { Poll::Ready(Some(Err(failed()))) }
            }
        }
    }
}

fn failed() -> HttpError {
    HttpError::InternalError(Some("the component failed while sending the body".into()))
}

impl GuardedBody {
    /// `inner`, whose guest is known to have finished well (`ok`) or not.
    fn settled(inner: HyperOutgoingBody, ok: bool) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(ok);
        GuardedBody::new(inner, rx)
    }
}

/// The response body of a guest whose request had ended (`ok`: well) before its head went
/// out: every frame is already in wasmtime-wasi-http's channel, so it is taken now. A body
/// of data only (the usual case) becomes one buffer of known length, which hyper sends
/// with a content-length in the same write as the head, with nothing to poll later.
/// Trailers, a failed guest's error, or (not expected) a body not yet complete are sent as
/// they came.
pub(super) fn finished(mut body: HyperOutgoingBody, ok: bool) -> HyperOutgoingBody {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut data: Vec<Bytes> = Vec::new();
    let mut other = VecDeque::new();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(d) => data.push(d),
                Err(trailers) => other.push_back(Ok(trailers)),
            },
            Poll::Ready(Some(Err(e))) => {
                other.push_back(Err(e));
                break;
            }
            Poll::Ready(None) => break,
            Poll::Pending => {
                let mut frames: VecDeque<_> = data.into_iter().map(|d| Ok(Frame::data(d))).collect();
                frames.extend(other);
                return Replayed { frames, rest: Some(GuardedBody::settled(body, ok)) }.boxed_unsync();
            }
        }
    }
    if !ok && !other.iter().any(Result::is_err) {
        other.push_back(Err(failed()));
    }
    if other.is_empty() {
        let whole = match data.len() {
            0 => Bytes::new(),
            1 => data.pop().unwrap_or_default(),
            _ => data
                .iter()
                .fold(BytesMut::new(), |mut b, d| {
                    b.extend_from_slice(d);
                    b
                })
                .freeze(),
        };
        return http_body_util::Full::new(whole).map_err(|never| match never {}).boxed_unsync();
    }
    let mut frames: VecDeque<_> = data.into_iter().map(|d| Ok(Frame::data(d))).collect();
    frames.extend(other);
    Replayed { frames, rest: None }.boxed_unsync()
}

/// What is left of a guest's request once its response head is out (a WASI 0.3 guest's:
/// its tasks write the body).
pub(super) type Rest = Pin<Box<dyn Future<Output = Result<(), super::CallError>> + Send>>;

/// A response body that runs the rest of its guest's request in place, from its own polls,
/// for as long as that keeps it going: a small body's last frames, the guest's end and its
/// outcome then come in one poll of hyper's, which sends them in one write with the head
/// (run in a task of its own, the guest's end came a wake-up later, and hyper had written
/// the data alone by then). The first time the body has to wait and the guest has not
/// ended, the guest goes on in a task of its own, as before: a client that stops reading
/// stops hyper polling the body, and the guest's deadline must not wait on that.
pub(super) struct InPlace {
    body: GuardedBody,
    rest: Option<Rest>,
}

impl InPlace {
    pub(super) fn new(body: GuardedBody, rest: Option<Rest>) -> Self {
        InPlace { body, rest }
    }

    /// One turn of the guest, if it runs here still; whether it has ended now.
    fn turn(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(rest) = self.rest.as_mut() else { return false };
        if rest.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.rest = None;
        true
    }
}

impl Body for InPlace {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        this.turn(cx);
        if let Poll::Ready(f) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(f);
        }
        // What the body just took (its end) may be what the guest waits for.
        if this.turn(cx) {
            return Pin::new(&mut this.body).poll_frame(cx);
        }
        if let Some(rest) = this.rest.take() {
            go_on(rest, None);
        }
        Poll::Pending
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InPlace {
    fn drop(&mut self) {
        // The client went away: the guest finishes (and reports) on its own, as it would
        // have in a task of its own.
        if let Some(rest) = self.rest.take()
            && !std::thread::panicking()
        {
            go_on(rest, None);
        }
    }
}

/// Run what is left of a guest's request in a task of its own (`detached`, if given, is
/// set first). Outside a runtime it is dropped, which ends the guest.
pub(super) fn go_on<F>(rest: Pin<Box<F>>, detached: Option<Arc<AtomicBool>>)
where
    F: Future<Output = Result<(), super::CallError>> + Send + 'static + ?Sized,
{
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        if let Some(d) = &detached {
            d.store(true, Ordering::SeqCst);
        }
        rt.spawn(rest);
    }
}

/// Frames already taken from a body, then what is left of it.
struct Replayed {
    frames: VecDeque<Result<Frame<Bytes>, HttpError>>,
    rest: Option<GuardedBody>,
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if let Some(f) = self.frames.pop_front() {
            return Poll::Ready(Some(f));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Frames = Vec<Result<Frame<Bytes>, HttpError>>;

    fn body_of(frames: Frames) -> HyperOutgoingBody {
        StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
    }

    async fn frames(mut body: HyperOutgoingBody) -> Vec<Result<Frame<Bytes>, String>> {
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.push(f.map_err(|e| e.to_string()));
        }
        out
    }

    fn data(f: &Result<Frame<Bytes>, String>) -> Option<&[u8]> {
        f.as_ref().ok()?.data_ref().map(|d| &d[..])
    }

    /// A body of `data` that says on `end` when it has given its last frame (as http3.rs's
    /// `EndSignal` does).
    struct Ends(HyperOutgoingBody, Option<oneshot::Sender<()>>);

    impl Body for Ends {
        type Data = Bytes;
        type Error = HttpError;

        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
            let polled = Pin::new(&mut self.0).poll_frame(cx);
            if matches!(polled, Poll::Ready(None))
                && let Some(end) = self.1.take()
            {
                let _ = end.send(());
            }
            polled
        }
    }

    /// A guarded body of "hi" and the rest of its guest's request: waits for the body's end,
    /// then for `go` (if given), then tells the outcome (ok) and sets `ended`.
    fn guest(go: Option<oneshot::Receiver<()>>, ended: Arc<AtomicBool>) -> InPlace {
        let (end_tx, end_rx) = oneshot::channel();
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let inner = Ends(body_of(vec![Ok(Frame::data(Bytes::from("hi")))]), Some(end_tx)).boxed_unsync();
        let rest: Rest = Box::pin(async move {
            let _ = end_rx.await;
            if let Some(go) = go {
                let _ = go.await;
            }
            let _ = outcome_tx.send(true);
            ended.store(true, Ordering::SeqCst);
            Ok(())
        });
        InPlace::new(GuardedBody::new(inner, outcome_rx), Some(rest))
    }

    #[tokio::test]
    async fn a_guest_that_ends_with_its_body_ends_it_in_the_same_poll() {
        let ended = Arc::new(AtomicBool::new(false));
        let mut body = guest(None, ended.clone());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(&first, Poll::Ready(Some(Ok(f))) if f.data_ref().is_some_and(|d| d == "hi")), "{first:?}");
        // No wake-up in between: the end and the guest's outcome come in the next poll.
        let second = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(second, Poll::Ready(None)), "{second:?}");
        assert!(ended.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_guest_still_busy_when_its_body_waits_goes_on_in_a_task_of_its_own() {
        let ended = Arc::new(AtomicBool::new(false));
        let (go_tx, go_rx) = oneshot::channel();
        let mut body = guest(Some(go_rx), ended.clone());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending(), "the outcome waits for the guest");
        assert!(body.rest.is_none(), "the guest was handed to a task of its own");
        // Never polled again (a client that stopped reading): the guest still finishes.
        go_tx.send(()).unwrap();
        for _ in 0..100 {
            if ended.load(Ordering::SeqCst) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(ended.load(Ordering::SeqCst), "the guest ran on without the body being polled");
        drop(body);
    }

    #[tokio::test]
    async fn a_finished_body_of_data_is_one_buffer_of_known_length() {
        let body = body_of(vec![Ok(Frame::data(Bytes::from("hel"))), Ok(Frame::data(Bytes::from("lo")))]);
        let whole = finished(body, true);
        assert_eq!(whole.size_hint().exact(), Some(5), "hyper can send a content-length");
        let got = frames(whole).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(data(&got[0]), Some(&b"hello"[..]));
        assert_eq!(finished(body_of(vec![]), true).size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn a_failed_guest_s_body_ends_in_an_error_and_trailers_are_kept() {
        let got = frames(finished(body_of(vec![Ok(Frame::data(Bytes::from("part")))]), false)).await;
        assert_eq!(data(&got[0]), Some(&b"part"[..]));
        assert!(got[1].as_ref().is_err_and(|e| e.contains("failed while sending the body")), "{got:?}");
        assert_eq!(got.len(), 2);

        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("7"));
        let body = body_of(vec![Ok(Frame::data(Bytes::from("a"))), Ok(Frame::trailers(trailers))]);
        let got = frames(finished(body, true)).await;
        assert_eq!(data(&got[0]), Some(&b"a"[..]));
        let t = got[1].as_ref().ok().and_then(|f| f.trailers_ref()).expect("trailers");
        assert_eq!(t["x-sum"], "7");
        assert_eq!(got.len(), 2);
    }

    #[tokio::test]
    async fn a_body_not_yet_complete_is_replayed_then_streamed() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, HttpError>>();
        tx.unbounded_send(Ok(Frame::data(Bytes::from("first")))).unwrap();
        let body = finished(StreamBody::new(rx).boxed_unsync(), true);
        assert_eq!(body.size_hint().exact(), None);
        tx.unbounded_send(Ok(Frame::data(Bytes::from("second")))).unwrap();
        drop(tx);
        let got = frames(body).await;
        let texts: Vec<_> = got.iter().map(|f| data(f).map(<[u8]>::to_vec)).collect();
        assert_eq!(texts, [Some(b"first".to_vec()), Some(b"second".to_vec())]);
    }

    #[tokio::test]
    async fn trailers_taken_before_the_body_was_found_incomplete_are_kept() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, HttpError>>();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("7"));
        tx.unbounded_send(Ok(Frame::data(Bytes::from("a")))).unwrap();
        tx.unbounded_send(Ok(Frame::trailers(trailers))).unwrap();
        let body = finished(StreamBody::new(rx).boxed_unsync(), true);
        drop(tx);
        let got = frames(body).await;
        assert_eq!(data(&got[0]), Some(&b"a"[..]));
        assert!(got[1].as_ref().ok().and_then(|f| f.trailers_ref()).is_some(), "{got:?}");
        assert_eq!(got.len(), 2);
    }
}
