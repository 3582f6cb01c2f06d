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
    /// Completed requests by duration: `latency[i]` counts those at or under
    /// `LATENCY_BOUNDS_US[i]` and over the bound before it; the last counts the rest.
    pub latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
}

/// Upper bounds (microseconds) of the duration buckets: a Prometheus histogram, and the
/// web console's p50/p99 (it takes the difference of two readings for a recent window).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

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
            let bucket = LATENCY_BOUNDS_US.partition_point(|&b| b < micros);
            self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The duration buckets' counts, not cumulative (see [`LATENCY_BOUNDS_US`]).
    pub fn latency_counts(&self) -> Vec<u64> {
        self.latency.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_bucket_of_their_upper_bound() {
        let s = Stats::default();
        for us in [0, 100, 101, 1_000, 10_000_000, 10_000_001, u64::MAX] {
            s.record(Outcome::Ok, us);
        }
        s.record(Outcome::Rejected, 5);
        let c = s.latency_counts();
        assert_eq!((c[0], c[1], c[3], c[15], c[16]), (2, 1, 1, 1, 2), "{c:?}");
        assert_eq!(c.iter().sum::<u64>(), 7, "a rejected request has no duration");
    }
}
