//! Fan out and finish: a durable barrier collects the answers and resumes the service.
//!
//! ```no_run
//! use nanogrid_sdk::{barrier, Error, Request, Response};
//!
//! fn handle(req: Request) -> Result<Response, Error> {
//!     if let Some(id) = barrier::id(&req) {
//!         // The continuation: every call has answered.
//!         let answers = barrier::results(id)?;
//!         let ok = answers.iter().filter(|a| a.as_ref().is_ok_and(|r| r.is_success())).count();
//!         return Ok(Response::text(200, format!("{ok} of {} answered", answers.len())));
//!     }
//!     let calls = vec![("a".to_string(), Request::get("/")), ("b".to_string(), Request::get("/"))];
//!     let id = barrier::fan_out(&calls, &Request::new("POST", "/resume").with_body("my state"))?;
//!     Ok(Response::text(202, id))
//! }
//! # fn main() {}
//! ```

use crate::bindings::nanogrid::service::barrier as wit;
use crate::{Error, Request, Response};

/// The header a continuation arrives with; its value is the barrier id. [`id`] reads it.
///
/// # Example
///
/// ```
/// use nanogrid_sdk::{Request, barrier};
///
/// let resumed = Request::new("POST", "/resume").with_header(barrier::HEADER, "b-42");
/// assert_eq!(barrier::id(&resumed), Some("b-42"));
/// ```
pub const HEADER: &str = "x-nanogrid-barrier";

/// Start `calls` concurrently and return the barrier's id at once; the current request
/// can finish. When every call has answered, `then` is sent to this service with the
/// header [`HEADER`]; put what the continuation needs in `then`'s body. The barrier lives
/// in the grid: if its node stops, calls that had not answered are sent again and `then`
/// still runs (at least once).
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, barrier};
///
/// // Count every line with `wordcount`; `POST /resume` runs when all are counted.
/// fn start(req: &Request) -> Result<Response, Error> {
///     let calls = req
///         .text()?
///         .lines()
///         .map(|line| Ok(("wordcount".to_string(), Request::post_json("/", &serde_json::json!({ "text": line }))?)))
///         .collect::<Result<Vec<_>, Error>>()?;
///     let then = Request::new("POST", "/resume").with_body(format!("{} lines", calls.len()));
///     let id = barrier::fan_out(&calls, &then)?;
///     Response::json(202, &serde_json::json!({ "job": id }))
/// }
/// # fn main() {}
/// ```
pub fn fan_out(calls: &[(String, Request)], then: &Request) -> Result<String, Error> {
    wit::fan_out(calls, then)
}

/// The barrier that resumed this request, if it is a continuation (it carries the
/// [`HEADER`] header).
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, barrier};
///
/// fn handle(req: Request) -> Result<Response, Error> {
///     match barrier::id(&req) {
///         Some(id) => Ok(Response::text(200, format!("barrier {id} is complete"))),
///         None => Ok(Response::text(200, "a fresh request")),
///     }
/// }
/// # fn main() {}
/// ```
pub fn id(req: &Request) -> Option<&str> {
    req.header(HEADER)
}

/// The answers of one of this service's barriers, in the order of its calls; a call that
/// has not answered yet is `unavailable`.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Response, barrier};
///
/// // The continuation: add up the word counts of the calls that succeeded.
/// fn resume(id: &str) -> Result<Response, Error> {
///     let mut words = 0;
///     for answer in barrier::results(id)? {
///         if let Ok(resp) = answer
///             && resp.is_success()
///         {
///             words += resp.json_body::<serde_json::Value>()?["words"].as_u64().unwrap_or(0);
///         }
///     }
///     Response::json(200, &serde_json::json!({ "job": id, "words": words }))
/// }
/// # fn main() {}
/// ```
pub fn results(id: &str) -> Result<Vec<Result<Response, Error>>, Error> {
    wit::results(id)
}
