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

impl Pace {
    /// No pace: for bodies from other nodes (a remote guest may pause as long as it likes).
    pub const OFF: Pace = Pace { idle: Duration::from_secs(365 * 86_400), min_rate: 0, grace: Duration::ZERO };

    /// Check settings from the command line or config file.
    pub fn validate(&self) -> Result<(), String> {
        let day = Duration::from_secs(86_400);
        if self.idle.is_zero() || self.idle > day {
            return Err(format!("body_idle_timeout_ms must be between 1 and 86400000, got {}", self.idle.as_millis()));
        }
        if self.grace > day {
            return Err(format!("body_rate_grace_ms must be at most 86400000, got {}", self.grace.as_millis()));
        }
        Ok(())
    }
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

/// Tracks one body's progress against a [`Pace`]. Time counts only while the reader
/// waits for the sender: a reader that stops reading (a guest busy elsewhere, a full
/// buffer downstream) does not make its sender slow.
#[derive(Debug)]
pub struct Meter {
    pace: Pace,
    received: u64,
}

impl Meter {
    pub fn new(pace: Pace) -> Self {
        Meter { pace, received: 0 }
    }

    /// Count `n` more bytes after `waited` in all spent waiting for them; an error once
    /// the rate over the waiting time is below the minimum.
    pub fn record(&mut self, n: usize, waited: Duration) -> Result<(), SlowBody> {
        self.received += n as u64;
        if waited <= self.pace.grace || self.pace.min_rate == 0 {
            return Ok(());
        }
        let owed = self.pace.min_rate as f64 * (waited - self.pace.grace).as_secs_f64();
        if (self.received as f64) < owed {
            let rate = (self.received as f64 / waited.as_secs_f64()) as u64;
            return Err(SlowBody::TooSlow { rate, min: self.pace.min_rate });
        }
        Ok(())
    }
}

/// A body that must arrive at a [`Pace`].
pub struct Paced<B> {
    inner: B,
    meter: Meter,
    /// Time spent waiting on the sender so far, and since when it is waited on now.
    waited: Duration,
    waiting_since: Option<Instant>,
    /// Made the first time the reader waits (most bodies never make it wait).
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl<B> Paced<B> {
    pub fn new(inner: B, pace: Pace) -> Self {
        Paced { inner, meter: Meter::new(pace), waited: Duration::ZERO, waiting_since: None, timer: None, done: false }
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
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready()
            && let Some(since) = self.waiting_since.take()
        {
            self.waited += since.elapsed();
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                let waited = self.waited;
                match self.meter.record(n, waited) {
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
            Poll::Pending => {
                // The idle clock runs only while the reader waits.
                if self.waiting_since.is_none() {
                    let now = Instant::now();
                    self.waiting_since = Some(now);
                    let idle = self.meter.pace.idle;
                    match self.timer.as_mut() {
                        Some(t) => t.as_mut().reset(now + idle),
                        None => self.timer = Some(Box::pin(tokio::time::sleep_until(now + idle))),
                    }
                }
                let Some(timer) = self.timer.as_mut() else { return Poll::Pending };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.done = true;
                        Poll::Ready(Some(Err(PacedError::Slow(SlowBody::Idle(self.meter.pace.idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
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
        assert_eq!(m.record(250, Duration::from_secs(2)), Ok(()), "250 bytes in 2 s beats 100 bytes/s");
        let slow = m.record(1, Duration::from_secs(4));
        assert!(matches!(slow, Err(SlowBody::TooSlow { min: 100, .. })), "251 bytes in 4 s does not");
        let lenient = Pace { grace: Duration::from_secs(3600), ..pace };
        assert_eq!(Meter::new(lenient).record(0, Duration::from_secs(10)), Ok(()), "within the grace period");
    }

    #[tokio::test]
    async fn a_reader_that_pauses_does_not_make_its_sender_slow() {
        let frames = futures::stream::iter(
            ["a", "b"].map(|s| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(s.as_bytes())))),
        );
        let pace = Pace { idle: Duration::from_millis(50), min_rate: 1_000_000, grace: Duration::ZERO };
        let mut paced = Paced::new(http_body_util::StreamBody::new(frames), pace);
        assert!(paced.frame().await.unwrap().is_ok());
        // The reader is busy for longer than the idle limit; the next part is there at once.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(paced.frame().await.unwrap().is_ok());
        assert!(paced.frame().await.is_none());
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
