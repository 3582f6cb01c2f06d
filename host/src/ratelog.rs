//! Logging that a flood cannot turn into a disk problem: each kind of event is logged at
//! most once per period, and the next line says how many were not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimited {
    period: Duration,
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl RateLimited {
    pub fn new(period: Duration) -> Self {
        RateLimited { period, last: Mutex::new(HashMap::new()) }
    }

    /// `Some(n)` when an event of `kind` may be logged now (`n` were dropped since the
    /// last one logged), `None` when it must not.
    pub fn allow(&self, kind: &'static str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match last.get_mut(kind) {
            Some((at, dropped)) if now.duration_since(*at) < self.period => {
                *dropped += 1;
                None
            }
            Some((at, dropped)) => {
                *at = now;
                Some(std::mem::take(dropped))
            }
            None => {
                last.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_per_kind() {
        let r = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(r.allow("a"), Some(0));
        for _ in 0..1000 {
            assert_eq!(r.allow("a"), None);
        }
        assert_eq!(r.allow("b"), Some(0), "kinds are apart");
        let r = RateLimited::new(Duration::ZERO);
        assert_eq!(r.allow("a"), Some(0));
        assert_eq!(r.allow("a"), Some(0));
    }
}
