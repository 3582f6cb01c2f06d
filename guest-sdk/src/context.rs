//! Facts about the current call.
//!
//! ```no_run
//! use nanogrid_sdk::{Error, Request, Response, context};
//!
//! fn handle(_req: Request) -> Result<Response, Error> {
//!     Response::json(
//!         200,
//!         &serde_json::json!({
//!             "service": context::service_name(),
//!             "request_id": context::request_id(),
//!             "trace_id": context::trace_id(),
//!         }),
//!     )
//! }
//! # fn main() {}
//! ```

use crate::bindings::nanogrid::service::context as wit;

/// The correlation id of the request being handled. Calls through [`invoke`](crate::invoke)
/// carry it along, so the callee logs the same id.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Response, context};
///
/// fn accepted() -> Result<Response, Error> {
///     Response::json(202, &serde_json::json!({ "request_id": context::request_id() }))
/// }
/// # fn main() {}
/// ```
pub fn request_id() -> String {
    wit::request_id()
}

/// The name this service is deployed under (in a fused chain: the entry service's name).
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Response, context};
///
/// let resp = Response::text(200, "ok").with_header("x-served-by", &context::service_name());
/// # let _ = resp;
/// ```
pub fn service_name() -> String {
    wit::service_name()
}

/// The W3C trace id of the request being handled (32 lower-case hex digits). The platform
/// carries it through `invoke`, `call-all`, barriers and forwarding, so every service a
/// request reaches sees the same id; look the trace up with `nanogrid trace ID`.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Response, context};
///
/// let resp = Response::text(200, format!("trace {}\n", context::trace_id()));
/// # let _ = resp;
/// ```
pub fn trace_id() -> String {
    wit::trace_id()
}
