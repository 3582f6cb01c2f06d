//! The error type of every platform call.

use crate::bindings::nanogrid::service::types::Error as WitError;

/// What a platform call (kv, invoke, …) can fail with, and what a handler may return.
///
/// It is the WIT `error` variant itself, so it crosses service boundaries unchanged. A
/// handler's `Err` becomes a JSON error response with the matching [`status`](Error::status);
/// `serde_json` and UTF-8 errors convert into `invalid` with `?`.
///
/// # Example
///
/// ```
/// use nanogrid_sdk::{Error, Request};
///
/// fn item_id(req: &Request) -> Result<u64, Error> {
///     let id = req.route().trim_start_matches("/items/");
///     id.parse().map_err(|_| Error::invalid(format!("{id:?} is not an item id")))
/// }
///
/// assert_eq!(item_id(&Request::get("/items/7")).unwrap(), 7);
/// let err = item_id(&Request::get("/items/seven")).unwrap_err();
/// assert!(matches!(err, Error::Invalid(_)));
/// assert_eq!(err.status(), 400);
/// ```
pub type Error = WitError;

impl Error {
    /// Shorthand for an `invalid` error, the usual answer to a malformed request.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request};
    ///
    /// fn limit(req: &Request) -> Result<u32, Error> {
    ///     let s = req.query_param("limit").unwrap_or("100");
    ///     s.parse().map_err(|_| Error::invalid(format!("limit={s} is not a number")))
    /// }
    ///
    /// assert_eq!(limit(&Request::get("/items?limit=ten")).unwrap_err().code(), "invalid");
    /// ```
    pub fn invalid(msg: impl Into<String>) -> Self {
        WitError::Invalid(msg.into())
    }

    /// Shorthand for a `not-found` error.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, Request, Response, kv};
    ///
    /// fn handle(req: Request) -> Result<Response, Error> {
    ///     let value = kv::get(req.route())?.ok_or_else(|| Error::not_found(format!("no key {:?}", req.route())))?;
    ///     Ok(Response::new(200, value))
    /// }
    /// # fn main() {}
    /// ```
    pub fn not_found(msg: impl Into<String>) -> Self {
        WitError::NotFound(msg.into())
    }

    /// Shorthand for an `internal` error: a fault of the service, not of the request.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, kv};
    ///
    /// fn read_counter(key: &str) -> Result<i64, Error> {
    ///     match kv::get(key)? {
    ///         Some(bytes) => std::str::from_utf8(&bytes)
    ///             .ok()
    ///             .and_then(|s| s.parse().ok())
    ///             .ok_or_else(|| Error::internal(format!("counter {key:?} holds a non-integer"))),
    ///         None => Ok(0),
    ///     }
    /// }
    /// # fn main() {}
    /// ```
    pub fn internal(msg: impl Into<String>) -> Self {
        WitError::Internal(msg.into())
    }

    /// The kebab-case code used in JSON error bodies (`not-found`, `invalid`, …).
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::Error;
    ///
    /// assert_eq!(Error::not_found("no such job").code(), "not-found");
    /// assert_eq!(Error::Timeout.code(), "timeout");
    /// ```
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
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, Response, invoke};
    ///
    /// // Answer 200 with the callee's result, or its error with the matching status.
    /// fn try_stats(text: &str) -> Response {
    ///     match invoke::post_json("wordcount", "/", &serde_json::json!({ "text": text })) {
    ///         Ok(resp) => resp,
    ///         Err(e) => Response::text(e.status(), format!("wordcount: {}", e.message())),
    ///     }
    /// }
    /// # fn main() {}
    /// ```
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
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Input {
    ///     text: String,
    /// }
    ///
    /// fn input(req: &Request) -> Result<Input, Error> {
    ///     req.json().map_err(|e| Error::invalid(format!("send {{\"text\": …}}: {}", e.message())))
    /// }
    ///
    /// let Err(err) = input(&Request::new("POST", "/").with_body("hello")) else { unreachable!() };
    /// assert!(err.message().starts_with("send {\"text\": …}: bad json"));
    /// ```
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
