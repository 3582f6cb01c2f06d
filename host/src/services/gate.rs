//! Admission: at most `limit` concurrent executions of a service, a bounded FIFO queue
//! behind them, and a wait limit. Changing the limit takes effect at once: raising it
//! admits queued requests, lowering it lets running ones finish and admits no more until
//! the count is under the new limit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateError {
    /// The limit is 0: the service is stopped.
    Stopped,
    /// The queue is full.
    QueueFull,
    /// Waited the whole wait limit without getting a slot.
    WaitTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GateSnapshot {
    pub limit: u32,
    pub max_queue: u32,
    pub running: u32,
    pub queued: u32,
    pub peak_running: u32,
}

/// What a gate has done since it was made, as running totals: the leader's autoscaler
/// takes the difference of two samples to get averages over its window.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Instance-seconds spent running requests (the integral of `running` over time).
    pub busy_s: f64,
    /// Request-seconds spent waiting in the queue (the integral of its length).
    pub queued_s: f64,
    /// Requests admitted, and the seconds they waited for a slot in all.
    pub admitted: u64,
    pub waited_s: f64,
    /// Requests turned away: queue full or waited too long.
    pub refused: u64,
    /// The limit now.
    pub limit: u32,
}

struct State {
    limit: u32,
    max_queue: u32,
    running: u32,
    peak_running: u32,
    /// Each waiter is handed its slot as a [`Permit`], so a waiter that gives up after
    /// the hand-over (its request was dropped) frees the slot by dropping it.
    waiters: VecDeque<oneshot::Sender<Permit>>,
    usage: Usage,
    /// When `usage`'s integrals were last brought up to date.
    since: Instant,
}

impl State {
    /// Add the time since the last change to the integrals (before any change).
    fn advance(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.since).as_secs_f64();
        self.since = now;
        self.usage.busy_s += dt * f64::from(self.running);
        self.usage.queued_s += dt * self.waiters.len() as f64;
    }
}

pub struct Gate {
    state: Mutex<State>,
}

/// A running slot; dropping it frees the slot and admits the next waiter.
pub struct Permit {
    /// `None` once disarmed (a hand-over that found its waiter gone, under the lock).
    gate: Option<Arc<Gate>>,
    /// Admitted at once (not from the queue) while no other request of the service ran.
    alone: bool,
}

impl Permit {
    fn new(gate: &Arc<Gate>, alone: bool) -> Self {
        Permit { gate: Some(gate.clone()), alone }
    }

    /// Whether this request was admitted at once, without queueing, while no other
    /// request of its service ran: a service this idle can spend a little more CPU to
    /// answer sooner. A request handed its slot from the queue counts as having company.
    pub fn alone(&self) -> bool {
        self.alone
    }
}

impl Gate {
    pub fn new(limit: u32, max_queue: u32) -> Arc<Self> {
        Arc::new(Gate {
            state: Mutex::new(State {
                limit,
                max_queue,
                running: 0,
                peak_running: 0,
                waiters: VecDeque::new(),
                usage: Usage::default(),
                since: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<Permit, GateError> {
        let mut rx = {
            let mut st = self.lock();
            st.advance();
            if st.limit == 0 {
                return Err(GateError::Stopped);
            }
            st.waiters.retain(|w| !w.is_closed());
            if st.running < st.limit && st.waiters.is_empty() {
                st.running += 1;
                st.peak_running = st.peak_running.max(st.running);
                st.usage.admitted += 1;
                return Ok(Permit::new(self, st.running == 1));
            }
            if st.waiters.len() >= st.max_queue as usize {
                st.usage.refused += 1;
                return Err(GateError::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            rx
        };
        let started = Instant::now();
        let out = match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(permit)) => Ok(permit),
            // The sender was dropped: the service was stopped while we waited.
            Ok(Err(_)) => Err(GateError::Stopped),
            Err(_) => {
                let _st = self.lock();
                rx.close();
                // A slot may have been handed over just as the wait ran out: keep it.
                rx.try_recv().map_err(|_| GateError::WaitTimeout)
            }
        };
        let mut st = self.lock();
        match &out {
            Ok(_) => {
                st.usage.admitted += 1;
                st.usage.waited_s += started.elapsed().as_secs_f64();
            }
            // A request turned away because the instances left (resized to 0) is routed
            // elsewhere, not lost demand.
            Err(GateError::WaitTimeout) => st.usage.refused += 1,
            Err(_) => {}
        }
        out
    }

    /// The running totals (see [`Usage`]), brought up to now.
    pub fn usage(&self) -> Usage {
        let mut st = self.lock();
        st.advance();
        Usage { limit: st.limit, ..st.usage }
    }

    /// Change the concurrency limit and queue bound. Queued requests are admitted up to
    /// the new limit; with limit 0 they are turned away.
    pub fn resize(self: &Arc<Self>, limit: u32, max_queue: u32) {
        let mut st = self.lock();
        st.advance();
        st.limit = limit;
        st.max_queue = max_queue;
        if limit == 0 {
            st.waiters.clear();
        }
        admit(self, &mut st);
    }

    pub fn snapshot(&self) -> GateSnapshot {
        let st = self.lock();
        GateSnapshot {
            limit: st.limit,
            max_queue: st.max_queue,
            running: st.running,
            queued: st.waiters.iter().filter(|w| !w.is_closed()).count() as u32,
            peak_running: st.peak_running,
        }
    }

    fn release(self: &Arc<Self>) {
        let mut st = self.lock();
        st.advance();
        st.running -= 1;
        admit(self, &mut st);
    }
}

/// Hand free slots to waiters in FIFO order, skipping ones that gave up. A waiter gets
/// its slot as a permit: one that is dropped before it wakes (its client went away)
/// drops the permit with it, which frees the slot again.
fn admit(gate: &Arc<Gate>, st: &mut State) {
    while st.running < st.limit {
        let Some(tx) = st.waiters.pop_front() else { break };
        st.running += 1;
        // A request that waited for its slot had company.
        match tx.send(Permit::new(gate, false)) {
            Ok(()) => st.peak_running = st.peak_running.max(st.running),
            Err(mut unwanted) => {
                // The waiter gave up first. Dropping the permit armed would take the lock
                // this holds: disarm it and take the slot back here.
                unwanted.gate = None;
                st.running -= 1;
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn limits_concurrency_and_queues_in_order() {
        let g = Gate::new(2, 2);
        let a = g.acquire(LONG).await.unwrap();
        let _b = g.acquire(LONG).await.unwrap();
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.acquire(LONG).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(g.snapshot().queued, 1);
        drop(a);
        waiter.await.unwrap().unwrap();
        assert_eq!(g.snapshot().peak_running, 2);
    }

    #[tokio::test]
    async fn a_permit_knows_whether_its_request_had_company() {
        let g = Gate::new(1, 4);
        let a = g.acquire(LONG).await.unwrap();
        assert!(a.alone(), "the only request running");
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.acquire(LONG).await.map(|p| p.alone()) });
        while g.snapshot().queued == 0 {
            tokio::task::yield_now().await;
        }
        drop(a);
        assert!(!waiter.await.unwrap().unwrap(), "a request that waited for its slot had company");
        g.resize(2, 4);
        let b = g.acquire(LONG).await.unwrap();
        let c = g.acquire(LONG).await.unwrap();
        assert!(b.alone() && !c.alone(), "the second of two running is not alone");
    }

    #[tokio::test]
    async fn usage_integrates_running_and_queued_time() {
        let g = Gate::new(1, 4);
        let a = g.acquire(LONG).await.unwrap();
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.acquire(LONG).await.map(drop) });
        while g.snapshot().queued == 0 {
            tokio::task::yield_now().await;
        }
        // The time the integrals measure: one running, one queued.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(a);
        waiter.await.unwrap().unwrap();
        let u = g.usage();
        assert_eq!((u.admitted, u.refused, u.limit), (2, 0, 1));
        assert!(u.busy_s >= 0.05, "one instance busy for the 50 ms: {u:?}");
        assert!(u.queued_s >= 0.05 && u.queued_s < u.busy_s + 0.01, "one waiter queued for them: {u:?}");
        g.resize(0, 0);
        assert_eq!(g.acquire(LONG).await.err(), Some(GateError::Stopped));
        assert_eq!(g.usage().refused, 0, "a stopped gate is not demand turned away");
        g.resize(1, 0);
        let _held = g.acquire(LONG).await.unwrap();
        assert_eq!(g.acquire(LONG).await.err(), Some(GateError::QueueFull));
        assert_eq!(g.usage().refused, 1);
    }

    #[tokio::test]
    async fn full_queue_and_stopped_are_refused() {
        let g = Gate::new(1, 0);
        let _a = g.acquire(LONG).await.unwrap();
        assert_eq!(g.acquire(LONG).await.err(), Some(GateError::QueueFull));
        g.resize(0, 0);
        assert_eq!(g.acquire(LONG).await.err(), Some(GateError::Stopped));
    }

    #[tokio::test]
    async fn wait_timeout_then_scale_up_admits() {
        let g = Gate::new(1, 4);
        let _a = g.acquire(LONG).await.unwrap();
        assert_eq!(g.acquire(Duration::from_millis(10)).await.err(), Some(GateError::WaitTimeout));
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.acquire(LONG).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        g.resize(2, 4);
        waiter.await.unwrap().unwrap();
    }

    /// A slot handed to a waiter whose request is dropped before it wakes (a client that
    /// disconnects while queued) comes back: it used to stay taken for good, and after
    /// enough of them the service answered "no free instance" to every request.
    #[tokio::test]
    async fn a_waiter_dropped_after_the_hand_over_frees_its_slot() {
        use std::future::Future as _;
        let g = Gate::new(1, 4);
        let held = g.acquire(LONG).await.unwrap();
        let mut waiting = Box::pin(g.acquire(LONG));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(g.snapshot().queued, 1);
        // The slot goes to the waiter, which is dropped before it is polled again.
        drop(held);
        assert_eq!(g.snapshot().running, 1, "handed over");
        drop(waiting);
        assert_eq!(g.snapshot().running, 0, "the dropped waiter's slot is free again");
        let _again = g.acquire(Duration::from_millis(10)).await.expect("the slot is free");
    }

    #[tokio::test]
    async fn scale_down_lets_running_finish() {
        let g = Gate::new(3, 4);
        let a = g.acquire(LONG).await.unwrap();
        let b = g.acquire(LONG).await.unwrap();
        g.resize(1, 4);
        assert_eq!(g.snapshot().running, 2);
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.acquire(LONG).await.map(|_| ()) });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "still over the new limit");
        drop(b);
        waiter.await.unwrap().unwrap();
    }
}
