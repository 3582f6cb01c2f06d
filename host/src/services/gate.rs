//! Admission: at most `limit` concurrent executions of a service, a bounded FIFO queue
//! behind them, and a wait limit. Changing the limit takes effect at once: raising it
//! admits queued requests, lowering it lets running ones finish and admits no more until
//! the count is under the new limit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

struct State {
    limit: u32,
    max_queue: u32,
    running: u32,
    peak_running: u32,
    waiters: VecDeque<oneshot::Sender<()>>,
}

pub struct Gate {
    state: Mutex<State>,
}

/// A running slot; dropping it frees the slot and admits the next waiter.
pub struct Permit {
    gate: Arc<Gate>,
}

impl Gate {
    pub fn new(limit: u32, max_queue: u32) -> Arc<Self> {
        Arc::new(Gate {
            state: Mutex::new(State { limit, max_queue, running: 0, peak_running: 0, waiters: VecDeque::new() }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<Permit, GateError> {
        let mut rx = {
            let mut st = self.lock();
            if st.limit == 0 {
                return Err(GateError::Stopped);
            }
            st.waiters.retain(|w| !w.is_closed());
            if st.running < st.limit && st.waiters.is_empty() {
                st.running += 1;
                st.peak_running = st.peak_running.max(st.running);
                return Ok(Permit { gate: self.clone() });
            }
            if st.waiters.len() >= st.max_queue as usize {
                return Err(GateError::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            rx
        };
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(())) => Ok(Permit { gate: self.clone() }),
            // The sender was dropped: the service was stopped while we waited.
            Ok(Err(_)) => Err(GateError::Stopped),
            Err(_) => {
                let _st = self.lock();
                rx.close();
                // A slot may have been handed over just as the wait ran out: keep it.
                if rx.try_recv().is_ok() { Ok(Permit { gate: self.clone() }) } else { Err(GateError::WaitTimeout) }
            }
        }
    }

    /// Change the concurrency limit and queue bound. Queued requests are admitted up to
    /// the new limit; with limit 0 they are turned away.
    pub fn resize(&self, limit: u32, max_queue: u32) {
        let mut st = self.lock();
        st.limit = limit;
        st.max_queue = max_queue;
        if limit == 0 {
            st.waiters.clear();
        }
        admit(&mut st);
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

    fn release(&self) {
        let mut st = self.lock();
        st.running -= 1;
        admit(&mut st);
    }
}

/// Hand free slots to waiters in FIFO order, skipping ones that gave up.
fn admit(st: &mut State) {
    while st.running < st.limit {
        let Some(tx) = st.waiters.pop_front() else { break };
        if tx.send(()).is_ok() {
            st.running += 1;
            st.peak_running = st.peak_running.max(st.running);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
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
