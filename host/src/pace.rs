//! Slow senders: a request body must keep arriving. [`Pace`] is the rule (no gap longer
//! than `idle`, and after `grace`, at least `min_rate` bytes a second on average), and
//! [`Paced`] a body that ends with [`SlowBody`] when its sender breaks it. Buffered reads
//! ([`crate::http::read_body_paced`]) and bodies streamed into wasi:http guests both use
//! it, so a client trickling a byte every few seconds holds a connection for seconds, not
//! for ever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How fast a request body must arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// The longest gap between two parts of a body.
    pub idle: Duration,
    /// The lowest average rate, in bytes a second, once `grace` has passed.
    pub min_rate: u64,
    pub grace: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace { idle: Duration::from_secs(10), min_rate: 1024, grace: Duration::from_secs(10) }
    }
}

/// Why a body was cut off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlowBody {
    #[error("the request body stalled: nothing arrived for {0:?}")]
    Idle(Duration),
    #[error("the request body arrived at {rate} bytes/s; the minimum is {min} bytes/s")]
    TooSlow { rate: u64, min: u64 },
}

/// Tracks one body's progress against a [`Pace`].
#[derive(Debug)]
pub struct Meter {
    pace: Pace,
    started: Instant,
    received: u64,
}

impl Meter {
    pub fn new(pace: Pace) -> Self {
        Meter { pace, started: Instant::now(), received: 0 }
    }

    /// Count `n` bytes; an error once the average rate is below the minimum.
    pub fn record(&mut self, n: usize) -> Result<(), SlowBody> {
        self.received += n as u64;
        let elapsed = self.started.elapsed();
        if elapsed <= self.pace.grace || self.pace.min_rate == 0 {
            return Ok(());
        }
        let owed = self.pace.min_rate as f64 * (elapsed - self.pace.grace).as_secs_f64();
        if (self.received as f64) < owed {
            let rate = (self.received as f64 / elapsed.as_secs_f64()) as u64;
            return Err(SlowBody::TooSlow { rate, min: self.pace.min_rate });
        }
        Ok(())
    }
}

/// A body that must arrive at a [`Pace`].
pub struct Paced<B> {
    inner: B,
    meter: Meter,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl<B> Paced<B> {
    pub fn new(inner: B, pace: Pace) -> Self {
        let timer = Box::pin(tokio::time::sleep(pace.idle));
        Paced { inner, meter: Meter::new(pace), timer, done: false }
    }
}

/// A body's own error, or its sender too slow.
#[derive(Debug, thiserror::Error)]
pub enum PacedError<E> {
    #[error("{0}")]
    Inner(E),
    #[error("{0}")]
    Slow(SlowBody),
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = PacedError<B::Error>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                let idle = self.meter.pace.idle;
                self.timer.as_mut().reset(Instant::now() + idle);
                match self.meter.record(n) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(slow) => {
                        self.done = true;
                        Poll::Ready(Some(Err(PacedError::Slow(slow))))
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(PacedError::Inner(e)))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.done = true;
                    Poll::Ready(Some(Err(PacedError::Slow(SlowBody::Idle(self.meter.pace.idle)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn the_meter_allows_a_grace_period_then_a_minimum_rate() {
        let pace = Pace { idle: Duration::from_secs(1), min_rate: 100, grace: Duration::ZERO };
        let mut m = Meter::new(pace);
        m.started -= Duration::from_secs(2);
        assert_eq!(m.record(250), Ok(()), "250 bytes in 2 s beats 100 bytes/s");
        m.started -= Duration::from_secs(2);
        assert!(matches!(m.record(1), Err(SlowBody::TooSlow { min: 100, .. })), "251 bytes in 4 s does not");
        let lenient = Pace { grace: Duration::from_secs(3600), ..pace };
        let mut m = Meter::new(lenient);
        m.started -= Duration::from_secs(10);
        assert_eq!(m.record(0), Ok(()), "within the grace period anything goes");
    }

    #[tokio::test]
    async fn a_stalled_body_ends_with_an_error() {
        use futures::StreamExt as _;
        let first =
            futures::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"first")))]);
        let body = http_body_util::StreamBody::new(first.chain(futures::stream::pending()));
        let pace = Pace { idle: Duration::from_millis(50), min_rate: 0, grace: Duration::ZERO };
        let mut paced = Paced::new(body, pace);
        let first = paced.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        let err = paced.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, PacedError::Slow(SlowBody::Idle(_))), "{err}");
        assert!(paced.frame().await.is_none());
    }
}
