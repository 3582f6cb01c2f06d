//! The service's configuration: the `config` map of its deployment spec.
//!
//! ```no_run
//! use nanogrid_sdk::{Error, Request, Response, config};
//!
//! fn handle(_req: Request) -> Result<Response, Error> {
//!     let greeting = config::get_or("greeting", "hello");
//!     Ok(Response::text(200, format!("{greeting}, world\n")))
//! }
//! # fn main() {}
//! ```

use crate::bindings::nanogrid::service::config as wit;

/// One value, if set.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, config};
///
/// fn upstream() -> Result<String, Error> {
///     config::get("upstream").ok_or_else(|| Error::internal("set `upstream` in the service's config"))
/// }
/// # fn main() {}
/// ```
pub fn get(key: &str) -> Option<String> {
    wit::get(key)
}

/// One value, or `default` when it is not set.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, config};
///
/// fn page_size() -> Result<u32, Error> {
///     let s = config::get_or("page-size", "100");
///     s.parse().map_err(|_| Error::internal(format!("page-size={s} is not a number")))
/// }
/// # fn main() {}
/// ```
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_string())
}

/// Every configured key and value.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Response, config};
///
/// fn show_config() -> Result<Response, Error> {
///     let map: std::collections::BTreeMap<String, String> = config::all().into_iter().collect();
///     Response::json(200, &map)
/// }
/// # fn main() {}
/// ```
pub fn all() -> Vec<(String, String)> {
    wit::get_all()
}
