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
