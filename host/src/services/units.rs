//! Compiled components by digest, shared by every service and version that runs them:
//! one copy of the code and its description however many services deploy the same bytes.
//! Loading a component maps its compiled file and touches most of it (about 400 KiB of
//! RSS for the 128 KB `hello`), so without sharing, N services of one digest cost N copies
//! (docs/BENCHMARKS.md, "Deploy latency and density").
//!
//! Entries are weak: a digest that no deployed version uses is freed with its last user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::Unit;

#[derive(Default)]
pub struct Units {
    map: Mutex<HashMap<String, Weak<Unit>>>,
}

impl Units {
    /// The unit of `digest`, if a live service or version still holds it.
    pub fn get(&self, digest: &str) -> Option<Arc<Unit>> {
        self.lock().get(digest).and_then(Weak::upgrade)
    }

    /// Share `unit`; when another load of the same digest got here first, that one (so
    /// every user ends up with one copy).
    pub fn share(&self, unit: Arc<Unit>) -> Arc<Unit> {
        let mut map = self.lock();
        if let Some(live) = map.get(&unit.digest).and_then(Weak::upgrade) {
            return live;
        }
        // Drop entries of freed units now and then: the map stays within twice the
        // digests in use.
        if map.len() >= 64 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        map.insert(unit.digest.clone(), Arc::downgrade(&unit));
        unit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Unit>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
