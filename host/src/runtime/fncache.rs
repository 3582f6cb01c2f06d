//! Cranelift's incremental compilation cache: each compiled function is kept by a hash
//! of its body and the compiler's settings, so a component whose functions were compiled
//! before (a new build of a service after a one-line change, another service built with
//! the same SDK and standard library) compiles only what is new. The per-digest cache
//! (`<digest>.cwasm`) cannot help there: a changed component has a new digest. Python and
//! JavaScript components change mostly in data, not code.
//!
//! Kept in memory within a byte budget, oldest entries dropped first. (A file per
//! function was tried first: on this machine's disk the writes made a first compile of
//! `hello` 2.5 times slower, docs/BENCHMARKS.md.)

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Bytes of compiled functions kept per engine.
pub const BUDGET: usize = 128 << 20;

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Vec<u8>, Arc<[u8]>>,
    /// Keys in insertion order, for eviction.
    order: VecDeque<Vec<u8>>,
    bytes: usize,
}

#[derive(Debug)]
pub struct FunctionCache {
    budget: usize,
    entries: Mutex<Entries>,
}

impl FunctionCache {
    pub fn new(budget: usize) -> Self {
        FunctionCache { budget, entries: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let value = self.lock().map.get(key).cloned()?;
        Some(Cow::Owned(value.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        if size > self.budget {
            return false;
        }
        let mut e = self.lock();
        while e.bytes + size > self.budget {
            let Some(old) = e.order.pop_front() else { break };
            if let Some(v) = e.map.remove(&old) {
                e.bytes -= old.len() + v.len();
            }
        }
        if let Some(v) = e.map.insert(key.to_vec(), value.into()) {
            e.bytes -= key.len() + v.len();
        } else {
            e.order.push_back(key.to_vec());
        }
        e.bytes += size;
        true
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::CacheStore as _;

    #[test]
    fn entries_are_read_back_and_the_oldest_go_past_the_budget() {
        let c = super::FunctionCache::new(15);
        assert!(c.get(b"k1").is_none());
        assert!(c.insert(b"k1", vec![1; 8]));
        assert_eq!(c.get(b"k1").as_deref(), Some(&[1u8; 8][..]));
        assert!(c.insert(b"k2", vec![2; 8]));
        assert!(c.get(b"k1").is_none(), "k1 was dropped to make room");
        assert_eq!(c.get(b"k2").as_deref(), Some(&[2u8; 8][..]));
        assert!(!c.insert(b"k3", vec![3; 30]), "larger than the whole budget");
    }
}
