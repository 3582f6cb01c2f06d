//! Log lines in the node's log, tagged with the service name and request id.
//!
//! ```no_run
//! use nanogrid_sdk::{Error, Request, Response, log};
//!
//! fn handle(req: Request) -> Result<Response, Error> {
//!     log::info(&format!("{} {}", req.method, req.route()));
//!     if req.body.is_empty() {
//!         log::warn("empty body");
//!     }
//!     Ok(Response::text(200, "logged"))
//! }
//! # fn main() {}
//! ```

use crate::bindings::nanogrid::service::log as wit;

/// How severe a log line is: `Trace`, `Debug`, `Info`, `Warn` or `Error`, from least to
/// most. The node's log filter decides which levels are kept.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::log::{self, Level};
///
/// fn report(failed: usize) {
///     let level = if failed > 0 { Level::Warn } else { Level::Info };
///     log::log(level, &format!("{failed} calls failed"));
/// }
/// # fn main() {}
/// ```
pub use wit::Level;

/// Log at any level.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::log::{self, Level};
///
/// log::log(Level::Trace, "entering the slow path");
/// ```
pub fn log(level: Level, message: &str) {
    wit::log(level, message)
}

/// Log at [`Level::Debug`]: detail useful while developing a service.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, log};
///
/// fn parse(req: &Request) -> Result<serde_json::Value, Error> {
///     log::debug(&format!("parsing {} bytes", req.body.len()));
///     req.json()
/// }
/// # fn main() {}
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Log at [`Level::Info`]: what the service did.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, kv, log};
///
/// fn bump(key: &str) -> Result<i64, Error> {
///     let n = kv::increment(key, 1)?;
///     log::info(&format!("{key} is now {n}"));
///     Ok(n)
/// }
/// # fn main() {}
/// ```
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Log at [`Level::Warn`]: something unexpected the service recovered from.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Request, log};
///
/// fn limit(req: &Request) -> u32 {
///     match req.query_param("limit").map(str::parse) {
///         Some(Ok(n)) => n,
///         Some(Err(_)) => {
///             log::warn("ignoring a malformed ?limit=");
///             100
///         }
///         None => 100,
///     }
/// }
/// # fn main() {}
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Log at [`Level::Error`]: a failure the request could not recover from.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Response, invoke, log};
///
/// fn stats(text: &str) -> Result<Response, Error> {
///     invoke::post_json("wordcount", "/", &serde_json::json!({ "text": text })).inspect_err(|e| {
///         log::error(&format!("wordcount failed: {} ({})", e.message(), e.code()));
///     })
/// }
/// # fn main() {}
/// ```
pub fn error(message: &str) {
    log(Level::Error, message)
}
