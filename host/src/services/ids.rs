//! Request ids: 16 hex digits, unique per node run and hard to guess (a counter mixed
//! with a per-run seed), for correlating a request's logs, spans and replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) struct RequestIds {
    seed: u64,
    seq: AtomicU64,
}

impl RequestIds {
    /// Seeded from the clock and the process id.
    pub(super) fn new() -> Self {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        RequestIds { seed, seq: AtomicU64::new(0) }
    }

    /// The per-run seed (also seeds the barrier ids).
    pub(super) fn seed(&self) -> u64 {
        self.seed
    }

    pub(super) fn next(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        // splitmix64 over seed+counter: unique and unguessable enough for correlation.
        let mut z = self.seed.wrapping_add(n.wrapping_mul(0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        let hex = crate::trace::context::hex_u64(z ^ (z >> 31));
        std::str::from_utf8(&hex).expect("hex digits").to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::RequestIds;

    #[test]
    fn ids_are_sixteen_hex_digits_and_do_not_repeat() {
        let ids = RequestIds::new();
        let all: std::collections::HashSet<String> = (0..10_000).map(|_| ids.next()).collect();
        assert_eq!(all.len(), 10_000);
        assert!(all.iter().all(|id| id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit())));
    }
}
