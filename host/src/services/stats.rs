//! Per-service counters, exported in Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Stats {
    pub ok: AtomicU64,
    pub guest_error: AtomicU64,
    pub trapped: AtomicU64,
    pub timed_out: AtomicU64,
    pub rejected: AtomicU64,
    pub duration_us_sum: AtomicU64,
    pub completed: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest answered (any status below 500).
    Ok,
    /// The guest answered with a 5xx.
    GuestError,
    Trapped,
    TimedOut,
    /// Turned away before running (stopped, queue full, wait timeout).
    Rejected,
}

impl Stats {
    pub fn record(&self, outcome: Outcome, micros: u64) {
        let c = match outcome {
            Outcome::Ok => &self.ok,
            Outcome::GuestError => &self.guest_error,
            Outcome::Trapped => &self.trapped,
            Outcome::TimedOut => &self.timed_out,
            Outcome::Rejected => &self.rejected,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if outcome != Outcome::Rejected {
            self.completed.fetch_add(1, Ordering::Relaxed);
            self.duration_us_sum.fetch_add(micros, Ordering::Relaxed);
        }
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
