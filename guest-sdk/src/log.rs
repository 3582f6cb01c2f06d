//! Log lines in the node's log, tagged with the service name and request id.

use crate::bindings::nanogrid::service::log as wit;
pub use wit::Level;

/// Log at any level.
pub fn log(level: Level, message: &str) {
    wit::log(level, message)
}

pub fn debug(message: &str) {
    log(Level::Debug, message)
}

pub fn info(message: &str) {
    log(Level::Info, message)
}

pub fn warn(message: &str) {
    log(Level::Warn, message)
}

pub fn error(message: &str) {
    log(Level::Error, message)
}
