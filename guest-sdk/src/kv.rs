//! Key-value state in the calling service's own namespace.
//!
//! The plain functions use [`Consistency::Quorum`], which is what a counter or any
//! read-modify-write needs on a cluster; the `_with` variants take an explicit level.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::nanogrid::service::kv as wit;
pub use wit::Consistency;

/// Read a key; `None` when it is absent.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    wit::get(key, Consistency::Quorum)
}

/// Read a key at the given consistency.
pub fn get_with(key: &str, read: Consistency) -> Result<Option<Vec<u8>>, Error> {
    wit::get(key, read)
}

/// Write a key.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    wit::set(key, value, Consistency::Quorum)
}

/// Write a key at the given consistency.
pub fn set_with(key: &str, value: &[u8], write: Consistency) -> Result<(), Error> {
    wit::set(key, value, write)
}

/// Delete a key (deleting an absent key is not an error).
pub fn delete(key: &str) -> Result<(), Error> {
    wit::delete(key, Consistency::Quorum)
}

/// Delete a key at the given consistency.
pub fn delete_with(key: &str, write: Consistency) -> Result<(), Error> {
    wit::delete(key, write)
}

/// Replace the value only if it is still `expected` (`None`: the key must be absent).
pub fn compare_and_swap(key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, Error> {
    wit::compare_and_swap(key, expected, new)
}

/// Up to `limit` keys that start with `prefix`, in byte order, after `after`.
pub fn list_keys(prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>, Error> {
    wit::list_keys(prefix, after, limit)
}

/// Read a JSON value.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    match get(key)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal(format!("value of key {key:?} is not the expected json: {e}"))),
        None => Ok(None),
    }
}

/// Write a JSON value.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    set(key, &serde_json::to_vec(value)?)
}

/// Atomically add `delta` to the integer stored (as decimal text) at `key`, starting from
/// 0, and return the new value. Retries on contention with compare-and-swap.
pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
    loop {
        let current = get(key)?;
        let value = match &current {
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| Error::invalid(format!("key {key:?} does not hold an integer")))?,
            None => 0,
        };
        let next = value.checked_add(delta).ok_or_else(|| Error::invalid(format!("counter {key:?} would overflow")))?;
        if compare_and_swap(key, current.as_deref(), next.to_string().as_bytes())? {
            return Ok(next);
        }
    }
}
