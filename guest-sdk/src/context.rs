//! Facts about the current call.

use crate::bindings::nanogrid::service::context as wit;

/// The correlation id of the request being handled.
pub fn request_id() -> String {
    wit::request_id()
}

/// The name this service is deployed under.
pub fn service_name() -> String {
    wit::service_name()
}

/// The W3C trace id of the request being handled (32 lower-case hex digits). The platform
/// carries it through `invoke`, `call-all`, barriers and forwarding, so every service a
/// request reaches sees the same id; look the trace up with `nanogrid trace ID`.
///
/// ```no_run
/// use nanogrid_sdk::{Response, context};
/// let resp = Response::text(200, format!("trace {}\n", context::trace_id()));
/// # let _ = resp;
/// ```
pub fn trace_id() -> String {
    wit::trace_id()
}
