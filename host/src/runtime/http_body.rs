//! Response bodies of wasi:http guests: one that ends in an error when its guest failed
//! ([`GuardedBody`]), and one taken whole when its guest had already finished
//! ([`finished`]).

use std::collections::VecDeque;
use std::pin::Pin;
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
