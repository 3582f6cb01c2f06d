//! The error type of every platform call.

use crate::bindings::nanogrid::service::types::Error as WitError;

/// What a platform call (kv, invoke, …) can fail with, and what a handler may return.
///
/// It is the WIT `error` variant itself, so it crosses service boundaries unchanged.
pub type Error = WitError;

impl Error {
    /// Shorthand for an `invalid` error, the usual answer to a malformed request.
    pub fn invalid(msg: impl Into<String>) -> Self {
        WitError::Invalid(msg.into())
    }

    /// Shorthand for a `not-found` error.
    pub fn not_found(msg: impl Into<String>) -> Self {
        WitError::NotFound(msg.into())
    }

    /// Shorthand for an `internal` error.
    pub fn internal(msg: impl Into<String>) -> Self {
        WitError::Internal(msg.into())
    }

    /// The kebab-case code used in JSON error bodies (`not-found`, `invalid`, …).
    pub fn code(&self) -> &'static str {
        match self {
            WitError::NotFound(_) => "not-found",
            WitError::Unavailable(_) => "unavailable",
            WitError::Timeout => "timeout",
            WitError::Denied(_) => "denied",
            WitError::Invalid(_) => "invalid",
            WitError::Internal(_) => "internal",
        }
    }

    /// The HTTP status an error response for this error carries.
    pub fn status(&self) -> u16 {
        match self {
            WitError::NotFound(_) => 404,
            WitError::Unavailable(_) => 503,
            WitError::Timeout => 504,
            WitError::Denied(_) => 403,
            WitError::Invalid(_) => 400,
            WitError::Internal(_) => 500,
        }
    }

    /// The human-readable part of the error.
    pub fn message(&self) -> &str {
        match self {
            WitError::NotFound(m)
            | WitError::Unavailable(m)
            | WitError::Denied(m)
            | WitError::Invalid(m)
            | WitError::Internal(m) => m,
            WitError::Timeout => "the call timed out",
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        WitError::Invalid(format!("bad json: {err}"))
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(err: std::str::Utf8Error) -> Self {
        WitError::Invalid(format!("body is not utf-8: {err}"))
    }
}
