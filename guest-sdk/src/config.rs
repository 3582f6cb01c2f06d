//! The service's configuration: the `config` map of its deployment spec.

use crate::bindings::nanogrid::service::config as wit;

/// One value, if set.
pub fn get(key: &str) -> Option<String> {
    wit::get(key)
}

/// One value, or `default` when it is not set.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_string())
}

/// Every configured key and value.
pub fn all() -> Vec<(String, String)> {
    wit::get_all()
}
