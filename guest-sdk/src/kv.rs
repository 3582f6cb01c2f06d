//! Key-value state in the calling service's own namespace.
//!
//! The plain functions use [`Consistency::Quorum`], which is what a counter or any
//! read-modify-write needs on a cluster; the `_with` variants take an explicit level.
//! Keys are strings, values are bytes; [`get_json`] / [`set_json`] store serde values and
//! [`increment`] keeps a counter.
//!
//! ```no_run
//! use nanogrid_sdk::{Error, Request, Response, kv};
//!
//! fn handle(req: Request) -> Result<Response, Error> {
//!     let key = format!("notes{}", req.route());
//!     match req.method.as_str() {
//!         "PUT" => kv::set(&key, &req.body)?,
//!         "DELETE" => kv::delete(&key)?,
//!         _ => {}
//!     }
//!     match kv::get(&key)? {
//!         Some(body) => Ok(Response::new(200, body)),
//!         None => Err(Error::not_found(format!("no note {key:?}"))),
//!     }
//! }
//! # fn main() {}
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::nanogrid::service::kv as wit;
/// How many replicas of a key must agree before a read or write returns.
///
/// - `One`: the key's primary alone; fastest, and a write may be lost with its primary.
/// - `Quorum`: a majority of the replicas; the default of the plain functions, and what a
///   read-modify-write needs.
/// - `All`: every replica.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::kv::{self, Consistency};
/// use nanogrid_sdk::{Error, Request};
///
/// fn level(req: &Request) -> Result<Consistency, Error> {
///     match req.query_param("consistency") {
///         None | Some("quorum") => Ok(Consistency::Quorum),
///         Some("one") => Ok(Consistency::One),
///         Some("all") => Ok(Consistency::All),
///         Some(other) => Err(Error::invalid(format!("consistency={other} is not one, quorum or all"))),
///     }
/// }
///
/// fn read(req: &Request, key: &str) -> Result<Option<Vec<u8>>, Error> {
///     kv::get_with(key, level(req)?)
/// }
/// # fn main() {}
/// ```
///
/// # In `wit/service.wit`
///
pub use wit::Consistency;

/// Read a key; `None` when it is absent.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, kv};
///
/// fn handle(req: Request) -> Result<Response, Error> {
///     match kv::get(req.route())? {
///         Some(value) => Ok(Response::new(200, value)),
///         None => Err(Error::not_found(format!("no key {:?}", req.route()))),
///     }
/// }
/// # fn main() {}
/// ```
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    wit::get(key, Consistency::Quorum)
}

/// Read a key at the given consistency.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::Error;
/// use nanogrid_sdk::kv::{self, Consistency};
///
/// // A cache lookup: any replica's value will do.
/// fn cached(key: &str) -> Result<Option<Vec<u8>>, Error> {
///     kv::get_with(&format!("cache/{key}"), Consistency::One)
/// }
/// # fn main() {}
/// ```
pub fn get_with(key: &str, read: Consistency) -> Result<Option<Vec<u8>>, Error> {
    wit::get(key, read)
}

/// Write a key.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, kv};
///
/// fn handle(req: Request) -> Result<Response, Error> {
///     kv::set(req.route(), &req.body)?;
///     Ok(Response::text(201, "stored"))
/// }
/// # fn main() {}
/// ```
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    wit::set(key, value, Consistency::Quorum)
}

/// Write a key at the given consistency.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::Error;
/// use nanogrid_sdk::kv::{self, Consistency};
///
/// // An order must survive the loss of any replica.
/// fn save_order(id: &str, order: &[u8]) -> Result<(), Error> {
///     kv::set_with(&format!("order/{id}"), order, Consistency::All)
/// }
/// # fn main() {}
/// ```
pub fn set_with(key: &str, value: &[u8], write: Consistency) -> Result<(), Error> {
    wit::set(key, value, write)
}

/// Delete a key (deleting an absent key is not an error).
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, kv};
///
/// fn handle(req: Request) -> Result<Response, Error> {
///     if req.method == "DELETE" {
///         kv::delete(req.route())?;
///         return Ok(Response::new(204, Vec::new()));
///     }
///     Err(Error::invalid("only DELETE is supported"))
/// }
/// # fn main() {}
/// ```
pub fn delete(key: &str) -> Result<(), Error> {
    wit::delete(key, Consistency::Quorum)
}

/// Delete a key at the given consistency.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::Error;
/// use nanogrid_sdk::kv::{self, Consistency};
///
/// // Dropping a cache entry: one replica is enough.
/// fn evict(key: &str) -> Result<(), Error> {
///     kv::delete_with(&format!("cache/{key}"), Consistency::One)
/// }
/// # fn main() {}
/// ```
pub fn delete_with(key: &str, write: Consistency) -> Result<(), Error> {
    wit::delete(key, write)
}

/// Replace the value only if it is still `expected` (`None`: the key must be absent).
/// Returns whether the swap happened.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, kv};
///
/// // Claim a name once: only the first caller wins.
/// fn claim(name: &str, owner: &str) -> Result<bool, Error> {
///     kv::compare_and_swap(&format!("owner/{name}"), None, owner.as_bytes())
/// }
/// # fn main() {}
/// ```
pub fn compare_and_swap(key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, Error> {
    wit::compare_and_swap(key, expected, new)
}

/// Up to `limit` keys that start with `prefix`, in byte order, strictly after `after`.
/// Pass the last key of one page as `after` to get the next.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, kv};
///
/// fn handle(req: Request) -> Result<Response, Error> {
///     let prefix = req.query_param("prefix").unwrap_or("");
///     let keys = kv::list_keys(prefix, req.query_param("after"), 100)?;
///     Response::json(200, &serde_json::json!({ "keys": keys }))
/// }
/// # fn main() {}
/// ```
pub fn list_keys(prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>, Error> {
    wit::list_keys(prefix, after, limit)
}

/// Read a JSON value; `None` when the key is absent, an `internal` error when its value
/// is not the JSON of a `T`.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, kv};
///
/// #[derive(serde::Deserialize)]
/// struct Profile {
///     name: String,
/// }
///
/// fn name_of(user: &str) -> Result<String, Error> {
///     let profile: Profile = kv::get_json(&format!("user/{user}"))?
///         .ok_or_else(|| Error::not_found(format!("no user {user:?}")))?;
///     Ok(profile.name)
/// }
/// # fn main() {}
/// ```
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    match get(key)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal(format!("value of key {key:?} is not the expected json: {e}"))),
        None => Ok(None),
    }
}

/// Write a JSON value.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, kv};
///
/// fn handle(req: Request) -> Result<Response, Error> {
///     let doc: serde_json::Value = req.json()?;
///     kv::set_json(&format!("doc{}", req.route()), &doc)?;
///     Response::json(200, &doc)
/// }
/// # fn main() {}
/// ```
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    set(key, &serde_json::to_vec(value)?)
}

/// Atomically add `delta` to the integer stored (as decimal text) at `key`, starting from
/// 0, and return the new value. Retries on contention with compare-and-swap, so
/// concurrent requests never lose a count.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, kv};
///
/// // `POST /{key}?by=N` counts; the answer is the new value.
/// fn handle(req: Request) -> Result<Response, Error> {
///     let by = match req.query_param("by") {
///         Some(s) => s.parse().map_err(|_| Error::invalid(format!("by={s} is not an integer")))?,
///         None => 1,
///     };
///     let value = kv::increment(req.route(), by)?;
///     Response::json(200, &serde_json::json!({ "key": req.route(), "value": value }))
/// }
/// # fn main() {}
/// ```
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
